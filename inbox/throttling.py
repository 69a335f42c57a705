from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from inbox.authentication import RecipientPrincipal


class TokenRateThrottle(SimpleRateThrottle):
    """One rate per token: THROTTLE_RATE_SERVICE for service tokens, THROTTLE_RATE_RECIPIENT for
    recipient tokens (e.g. "120/min"; empty: no limit). Answers 429 with Retry-After. Counts live in
    Django's cache: set CACHE_URL to a shared cache (redis://...) when the API runs in many processes."""

    def get_rate(self):
        return None  # chosen per request in allow_request

    def allow_request(self, request, view):
        if isinstance(request.user, RecipientPrincipal):
            self.scope, self.rate, ident = "recipient", settings.THROTTLE_RATE_RECIPIENT, request.user.throttle_key
        elif isinstance(request.auth, Token):
            self.scope, self.rate, ident = "service", settings.THROTTLE_RATE_SERVICE, request.auth.key[:12]
        else:
            return True  # staff sessions
        if not self.rate:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.cache_format % {"scope": self.scope, "ident": ident}
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return self.throttle_failure()
        return self.throttle_success()

    def get_cache_key(self, request, view):
        return self.key
