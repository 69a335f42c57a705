"""Topics: PUT/DELETE/GET /api/v1/topics/<key>/subscribers/ and GET /api/v1/recipients/<id>/topics/."""

import pytest

from inbox.factories import RecipientFactory
from inbox.models import Recipient, Subscription

pytestmark = pytest.mark.django_db

URL = "/api/v1/topics/post:42/subscribers/"


def _subscribers(key="post:42") -> set[str]:
    return set(Subscription.objects.filter(key=key).values_list("recipient__external_id", flat=True))


def test_put_adds_subscribers_creating_unknown_recipients_and_counts_only_new_ones(service_client):
    RecipientFactory(external_id="1")

    first = service_client.put(URL, {"recipients": ["1", "2", "2"]}, format="json")
    again = service_client.put(URL, {"recipients": ["2", "3"]}, format="json")

    assert (first.status_code, first.json(), again.json()) == (200, {"added": 2}, {"added": 1})
    assert _subscribers() == {"1", "2", "3"}
    assert set(Recipient.objects.values_list("external_id", flat=True)) == {"1", "2", "3"}


def test_delete_removes_subscribers_and_ignores_the_unknown(service_client):
    service_client.put(URL, {"recipients": ["1", "2", "3"]}, format="json")

    response = service_client.delete(URL, {"recipients": ["2", "nobody"]}, format="json")

    assert response.json() == {"removed": 1}
    assert _subscribers() == {"1", "3"}
    assert Recipient.objects.filter(external_id="2").exists()  # unsubscribed, not deleted


def test_get_lists_subscribers_in_cursor_pages_without_gaps_or_repeats(service_client):
    service_client.put(URL, {"recipients": [f"u{i}" for i in range(7)]}, format="json")
    service_client.put("/api/v1/topics/other/subscribers/", {"recipients": ["x"]}, format="json")

    seen, url = [], f"{URL}?page_size=3"
    while url:
        page = service_client.get(url).json()
        seen += [item["recipient"] for item in page["results"]]
        assert all(set(item) == {"recipient", "subscribed_at"} for item in page["results"])
        url = page["next"]

    assert sorted(seen) == sorted(f"u{i}" for i in range(7))


def test_a_recipients_topics(service_client):
    service_client.put(URL, {"recipients": ["1"]}, format="json")
    service_client.put("/api/v1/topics/team.a/subscribers/", {"recipients": ["1", "2"]}, format="json")

    topics = service_client.get("/api/v1/recipients/1/topics/").json()["results"]
    unknown = service_client.get("/api/v1/recipients/nobody/topics/")

    assert sorted(t["topic"] for t in topics) == ["post:42", "team.a"]
    assert (unknown.status_code, unknown.json()["results"]) == (200, [])


@pytest.mark.parametrize(("method", "url", "body", "field"), [
    ("put", "/api/v1/topics/" + "k" * 201 + "/subscribers/", {"recipients": ["1"]}, "key"),
    ("put", "/api/v1/topics/a b/subscribers/", {"recipients": ["1"]}, "key"),
    ("put", "/api/v1/topics/a%00b/subscribers/", {"recipients": ["1"]}, "key"),
    ("get", "/api/v1/topics/bad%22key/subscribers/", None, "key"),
    ("put", URL, {"recipients": []}, "recipients"),
    ("put", URL, {"recipients": "1"}, "recipients"),
    ("put", URL, {"recipients": ["a b"]}, "recipients"),
    ("put", URL, {"recipients": ["x" * 129]}, "recipients"),
    ("put", URL, {"recipients": ["a\x00b"]}, "recipients"),
    ("put", URL, {"recipients": [{"id": "1"}]}, "recipients"),
    ("put", URL, {"recipients": [str(i) for i in range(10_001)]}, "recipients"),
    ("put", URL, {}, "recipients"),
    ("delete", URL, {"recipients": [None]}, "recipients"),
])
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(service_client, method, url, body, field):
    response = getattr(service_client, method)(url, body, format="json") if body is not None else service_client.get(url)

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Subscription.objects.exists() and not Recipient.objects.exists()


def test_topics_need_a_service_token(anonymous_client):
    assert anonymous_client.put(URL, {"recipients": ["1"]}, format="json").status_code == 401
    assert anonymous_client.get(URL).status_code == 401
    assert anonymous_client.get("/api/v1/recipients/1/topics/").status_code == 401
    assert not Subscription.objects.exists()
