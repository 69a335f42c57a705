"""GET /api/v1/notifications/<id>/: the trace of one notification, built by the real services in process."""

from datetime import timedelta

import jsonschema
import pytest
from django.utils import timezone

from campaigns.factories import CampaignFactory
from campaigns.models import CampaignStatus
from core import clock, scheduler, topics
from core.messages import NotificationTask
from core.models import DeadLetter, OutboxEvent
from delivery import services
from delivery.channels import PermanentChannelError, TransientChannelError
from delivery.models import Delivery
from inbox.models import Preference, Recipient

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/{}/"


def _send(client, recipient: str, **fields) -> str:
    body = {"sender": "s", "recipient": recipient, "kind": "like", "message": "hi", **fields}
    answer = client.post("/api/v1/notifications/", body, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["id"]


def _settle(notification_id: str) -> services.BatchResult:
    """What the worker does with the task the API queued."""
    [event] = [e for e in OutboxEvent.objects.filter(topic=topics.SEND.logical)
               if NotificationTask.decode(bytes(e.payload)).notification_id == notification_id]
    event.published_at = timezone.now()
    event.save()
    return services.deliveries_settle(tasks=[NotificationTask.decode(bytes(event.payload))])


def _attempt(send, error=None) -> None:
    services.channel_outcomes_record(outcomes=[(send, error)])


def _due_send(attempt: int = 1):
    """The send the worker's sender releases next, the clock moved past any backoff."""
    with clock.moved(hours=1):
        items = scheduler.release(kind=services.SEND, limit=10, lease=timedelta(seconds=60))
    [send] = services.channel_sends_of(items=items)
    assert send.attempt == attempt
    return send


def _trace(client, notification_id: str) -> dict:
    answer = client.get(URL.format(notification_id))
    assert answer.status_code == 200, answer.content
    return answer.json()


@pytest.fixture
def hooked(db):
    return Recipient.objects.create(external_id="hooked", push_endpoint="https://hooks.example.com/in")


def test_accepted_then_delivered_in_app(service_client):
    notification_id = _send(service_client, "1")

    accepted = _trace(service_client, notification_id)
    assert (accepted["status"], accepted["recipient"], accepted["settled_at"], accepted["in_app"]) == (
        "accepted", "1", None, None)
    assert accepted["accepted_at"] is not None and accepted["channels"] == [] == accepted["dead_letters"]

    _settle(notification_id)
    delivered = _trace(service_client, notification_id)
    assert (delivered["id"], delivered["status"], delivered["reason"], delivered["recipient"]) == (
        notification_id, "delivered", "", "1")
    assert delivered["settled_at"] and delivered["in_app"]["delivered_at"] and delivered["in_app"]["read_at"] is None

    service_client.post(f"/api/v1/recipients/1/notifications/{notification_id}/read/")
    assert _trace(service_client, notification_id)["in_app"]["read_at"] is not None


def test_skipped_with_its_reason(service_client):
    Recipient.objects.create(external_id="quiet")
    Preference.objects.create(recipient=Recipient.objects.get(external_id="quiet"), kinds={"like": False})
    notification_id = _send(service_client, "quiet")
    _settle(notification_id)

    trace = _trace(service_client, notification_id)

    assert (trace["status"], trace["reason"], trace["in_app"]) == ("skipped", "opted out of like", None)


def test_a_retried_channel_shows_its_attempts_scheduled_then_delivered(service_client, hooked):
    notification_id = _send(service_client, "hooked")
    _settle(notification_id)
    send = _due_send()

    pending = _trace(service_client, notification_id)
    assert pending["status"] == "scheduled"
    assert [(c["channel"], c["status"], c["attempts"]) for c in pending["channels"]] == [("webhook", "pending", 0)]
    assert pending["channels"][0]["next_attempt_at"] is not None
    assert pending["in_app"] is not None  # the inbox does not wait for the webhook

    _attempt(send, TransientChannelError("HTTP 503"))
    _attempt(_due_send(2), TransientChannelError("timeout"))
    retrying = _trace(service_client, notification_id)
    assert retrying["status"] == "scheduled"
    [channel] = retrying["channels"]
    assert (channel["status"], channel["attempts"], channel["last_error"]) == ("retrying", 2, "timeout")

    assert channel["next_attempt_at"] > channel["updated_at"]  # the backoff
    _attempt(_due_send(3))
    delivered = _trace(service_client, notification_id)
    assert delivered["status"] == "delivered" and delivered["dead_letters"] == []
    [channel] = delivered["channels"]
    assert (channel["status"], channel["attempts"], channel["last_error"], channel["next_attempt_at"]) == ("sent", 3, "", None)
    assert channel["updated_at"] >= retrying["channels"][0]["updated_at"]


def test_a_dead_lettered_channel_names_its_dead_letter(service_client, hooked):
    notification_id = _send(service_client, "hooked")
    _settle(notification_id)
    send = _due_send()
    _attempt(send, PermanentChannelError("HTTP 400"))

    trace = _trace(service_client, notification_id)

    assert (trace["status"], trace["reason"]) == ("dead_lettered", "webhook: HTTP 400")
    assert [(c["status"], c["attempts"]) for c in trace["channels"]] == [("dead", 1)]
    [letter] = trace["dead_letters"]
    assert (letter["reason"], letter["channel"], letter["attempts"], letter["status"], letter["error"]) == (
        "permanent failure", "webhook", 1, "dead", "HTTP 400")
    assert letter["id"] == DeadLetter.objects.get().id
    assert trace["in_app"] is not None

    services.dead_letter_replay(dead_letter=DeadLetter.objects.get())
    replayed = _trace(service_client, notification_id)
    assert replayed["status"] == "scheduled" and replayed["dead_letters"][0]["status"] == "replayed"


def test_a_task_that_failed_processing_is_dead_lettered_with_the_ledger_reason(service_client):
    Delivery.objects.create(notification_id="n-failed", recipient_external_id="7", outcome="failed",
                            reason="processing failed: value too long")
    DeadLetter.objects.create(reason="processing failed", error="value too long", notification_id="n-failed",
                              recipient_external_id="7", original_topic="t", payload=b"{}")

    trace = _trace(service_client, "n-failed")

    assert (trace["status"], trace["reason"], trace["recipient"]) == ("dead_lettered", "processing failed: value too long", "7")
    assert [d["reason"] for d in trace["dead_letters"]] == ["processing failed"]


def test_a_record_set_aside_before_it_was_settled_is_dead_lettered(service_client):
    DeadLetter.objects.create(reason="invalid payload", error="bad", notification_id="odd-1", original_topic="t", payload=b"")

    trace = _trace(service_client, "odd-1")

    assert (trace["status"], trace["reason"], trace["settled_at"]) == ("dead_lettered", "invalid payload", None)


def test_a_campaign_recipient_is_found_by_campaign_and_recipient_id(service_client):
    Recipient.objects.create(external_id="用户1")
    campaign = CampaignFactory(status=CampaignStatus.DISPATCHED)
    notification_id = f"{campaign.id}:用户1"

    accepted = _trace(service_client, notification_id)
    assert (accepted["status"], accepted["campaign_id"], accepted["recipient"]) == ("accepted", campaign.id, "用户1")

    services.deliveries_settle(tasks=[NotificationTask(notification_id=notification_id, recipient="用户1",
                                                       campaign_id=campaign.id)])
    delivered = _trace(service_client, notification_id)
    assert (delivered["status"], delivered["campaign_id"]) == ("delivered", campaign.id)
    assert delivered["in_app"] is not None

    # Not in the directory, or a campaign that is over or unknown: nothing is waiting for it.
    assert service_client.get(URL.format(f"{campaign.id}:stranger")).status_code == 404
    completed = CampaignFactory(status=CampaignStatus.COMPLETED)
    assert service_client.get(URL.format(f"{completed.id}:用户1")).status_code == 404
    assert service_client.get(URL.format(f"{completed.id + 1000}:用户1")).status_code == 404
    # Cancelled before it reached the recipient: it says so (found from outside: a 404).
    cancelled = CampaignFactory(status=CampaignStatus.CANCELLED)
    trace = _trace(service_client, f"{cancelled.id}:用户1")
    assert (trace["status"], trace["reason"], trace["campaign_id"]) == ("cancelled", "campaign cancelled", cancelled.id)
    assert service_client.get(URL.format(f"{cancelled.id}:stranger")).status_code == 404


def test_a_running_campaign_traces_only_the_recipients_its_segment_holds(service_client):
    """Found from outside: any recipient in the directory read `accepted` (or `scheduled`) for any
    unfinished campaign, whether its segment held them or not."""
    Recipient.objects.create(external_id="in-a", attributes={"grp": "A"})
    Recipient.objects.create(external_id="in-c", attributes={"grp": "C"})
    campaign = CampaignFactory(status=CampaignStatus.DISPATCHED,
                               segment={"type": "ATTRIBUTE", "attribute": "grp", "op": "eq", "value": "A"})
    assert _trace(service_client, f"{campaign.id}:in-a")["status"] == "accepted"
    assert service_client.get(URL.format(f"{campaign.id}:in-c")).status_code == 404
    held = CampaignFactory(status=CampaignStatus.SCHEDULED, segment={"type": "USER_IDS", "ids": ["in-c"]})
    assert _trace(service_client, f"{held.id}:in-c")["status"] == "scheduled"
    assert service_client.get(URL.format(f"{held.id}:in-a")).status_code == 404


def test_a_campaign_task_skipped_because_the_recipient_was_deleted(service_client):
    campaign = CampaignFactory(status=CampaignStatus.DISPATCHED)
    services.deliveries_settle(tasks=[NotificationTask(notification_id=f"{campaign.id}:gone", recipient="gone",
                                                       campaign_id=campaign.id)])

    trace = _trace(service_client, f"{campaign.id}:gone")

    assert (trace["status"], trace["reason"], trace["campaign_id"]) == ("skipped", "recipient deleted", campaign.id)


def test_an_unknown_id_is_a_json_404(service_client):
    answer = service_client.get(URL.format("00000000-0000-0000-0000-000000000000"))

    assert answer.status_code == 404 and answer["Content-Type"] == "application/json"
    assert "detail" in answer.json()


@pytest.mark.parametrize(("path_id", "codes"), [
    ("x" * 161, {400}),
    ("x" * 5000, {400}),
    ("a%00b", {400}),
    ("%00", {400}),
    ("a/b", {404}),
    ("a%2Fb", {404}),
    ("%2F", {404}),
    ("..", {404}),
    ("%ED%A0%80", {400, 404}),  # a lone surrogate's UTF-8: not valid UTF-8
    ("%FF%FE", {400, 404}),
    ("用户1", {404}),
    ("%F0%9F%98%80:%20x", {404}),
    ("1:", {404}),
    (":1", {404}),
    ("99999999999999999999999:x", {404}),  # a campaign id beyond 64 bits
    ("9223372036854775808:x", {404}),
    ("0:x", {404}),
    ("1:%0A%0D", {404}),
    ("'; DROP TABLE delivery_delivery; --", {404}),
    ("%25", {404}),
    ("x" * 160, {404}),
])
def test_hostile_ids_are_a_400_or_a_404_never_a_5xx(service_client, path_id, codes):
    CampaignFactory(status=CampaignStatus.DISPATCHED)

    answer = service_client.get(f"/api/v1/notifications/{path_id}/")

    assert answer.status_code in codes, (answer.status_code, answer.content)
    assert answer["Content-Type"] == "application/json"
    assert Delivery.objects.count() == 0


def test_only_service_clients_and_staff_trace(db, anonymous_client, service_client):
    notification_id = _send(service_client, "1")
    assert anonymous_client.get(URL.format(notification_id)).status_code == 401
    token = service_client.post("/api/v1/recipients/1/tokens/").json()["token"]
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert anonymous_client.get(URL.format(notification_id)).status_code == 403


def test_the_trace_does_not_clash_with_sending(service_client):
    assert service_client.get("/api/v1/notifications/").status_code == 405
    assert service_client.post(URL.format("abc"), {}, format="json").status_code == 405
    assert _send(service_client, "2")


def _nullable_to_json_schema(node):
    """OpenAPI 3.0's `nullable` as JSON Schema (the rest of drf-spectacular's output already is)."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_to_json_schema(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def test_a_full_trace_matches_the_documented_schema(service_client, hooked):
    """schemathesis's random ids only reach the 404: check a real 200, every part filled."""
    notification_id = _send(service_client, "hooked")
    _settle(notification_id)
    send = _due_send()
    _attempt(send, PermanentChannelError("HTTP 400"))
    service_client.post(f"/api/v1/recipients/hooked/notifications/{notification_id}/read/")
    trace = _trace(service_client, notification_id)
    assert trace["channels"] and trace["dead_letters"] and trace["in_app"]["read_at"]

    document = service_client.get("/api/schema/?format=json").json()
    components = _nullable_to_json_schema(document["components"])
    response = document["paths"]["/api/v1/notifications/{notification_id}/"]["get"]["responses"]["200"]
    schema = {**response["content"]["application/json"]["schema"], "components": components}
    jsonschema.validate(trace, schema)
    jsonschema.validate({**trace, "in_app": None, "campaign_id": 7, "settled_at": None}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**trace, "status": "lost"}, schema)


@pytest.mark.django_db(transaction=True)
def test_a_trace_reads_one_snapshot_while_a_worker_commits_between_its_reads():
    """Found in CI: the ledger was read before a worker's commit and the inbox row after it, so a
    notification whose webhook was still to be sent traced `delivered` with no channels."""
    import threading

    from django.db import connection

    from delivery.selectors import notification_trace

    Recipient.objects.create(external_id="racer", push_endpoint="https://hooks.example.com/racer")
    task = NotificationTask(notification_id="race-1", recipient="racer", kind="like", sender="s", message="hi",
                            created_at="2026-11-22T06:00:00+00:00")
    ledger = services.Delivery._meta.db_table
    fired = []

    def commit_after_the_ledger_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not fired and ledger in sql and sql.lstrip().upper().startswith("SELECT"):
            fired.append(sql)
            worker = threading.Thread(target=lambda: (services.deliveries_settle(tasks=[task]), connection.close()))
            worker.start()
            worker.join()
        return result

    with connection.execute_wrapper(commit_after_the_ledger_read):
        trace = notification_trace(notification_id="race-1")
    assert fired  # the worker committed between the trace's reads
    assert trace is None or trace.status != "delivered"  # what the snapshot held: nothing settled yet
    after = notification_trace(notification_id="race-1")
    assert after.status == "scheduled" and [c.status for c in after.channels] == ["pending"]
