"""The HTTP benchmarks' ceiling: a DRF view that validates three fields and answers 202 (POST), or
answers a small fixed JSON object (GET, beside the inbox reads), with no authentication and no
database. Routed only when BENCH_ENDPOINTS is true (the benchmark's own server)."""

from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView


class _BareInput(serializers.Serializer):
    sender = serializers.CharField(max_length=128)
    recipient = serializers.CharField(max_length=128)
    message = serializers.CharField(max_length=2000)


class BareView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def post(self, request):
        serializer = _BareInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response({"status": "accepted"}, status=status.HTTP_202_ACCEPTED)

    def get(self, request):
        return Response({"count": 0, "capped": False})
