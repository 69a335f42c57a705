import pytest

from inbox.factories import NotificationFactory, RecipientFactory
from inbox.models import Notification, Recipient

pytestmark = pytest.mark.django_db


def test_upsert_one_recipient_creates_then_updates(service_client):
    body = {"id": "42", "email": "a@example.com", "locale": "de", "attributes": {"country": "DE", "plan": "pro"}}

    first = service_client.post("/api/v1/recipients/", body, format="json")
    second = service_client.post("/api/v1/recipients/", {"id": "42", "locale": "fr"}, format="json")

    assert first.json() == {"created": 1, "updated": 0}
    assert second.json() == {"created": 0, "updated": 1}
    recipient = Recipient.objects.get(external_id="42")
    # Only the fields the entry carries are written.
    assert (recipient.email, recipient.locale, recipient.attributes) == ("a@example.com", "fr", {"country": "DE", "plan": "pro"})


def test_upsert_a_list_counts_created_and_updated(service_client):
    RecipientFactory(external_id="1", email="old@example.com")
    body = [{"id": str(i), "email": f"{i}@example.com"} for i in range(1, 1001)]

    response = service_client.post("/api/v1/recipients/", body, format="json")

    assert response.status_code == 200
    assert response.json() == {"created": 999, "updated": 1}
    assert Recipient.objects.get(external_id="1").email == "1@example.com"
    assert Recipient.objects.count() == 1000


def test_upsert_over_10000_is_400_and_stores_nothing(service_client):
    response = service_client.post("/api/v1/recipients/", [{"id": str(i)} for i in range(10_001)], format="json")

    assert response.status_code == 400
    assert "At most 10000" in response.json()["non_field_errors"][0]
    assert Recipient.objects.count() == 0


def test_upsert_with_one_bad_entry_names_it_and_stores_nothing(service_client):
    response = service_client.post("/api/v1/recipients/", [{"id": "ok"}, {"id": "bad id"}, {"id": "x", "email": "nope"}], format="json")

    assert response.status_code == 400
    errors = response.json()  # keyed by the index of each bad entry
    assert set(errors) == {"1", "2"} and "id" in errors["1"] and "email" in errors["2"]
    assert Recipient.objects.count() == 0


def test_list_filters_and_paginates_by_cursor(service_client):
    RecipientFactory(external_id="a", locale="de", attributes={"country": "DE"})
    RecipientFactory(external_id="b", locale="de", attributes={"country": "FR"})
    RecipientFactory(external_id="c", locale="fr", attributes={"country": "DE"})

    by_locale = service_client.get("/api/v1/recipients/?locale=de").json()["results"]
    by_attribute = service_client.get("/api/v1/recipients/?attributes.country=DE").json()["results"]
    first_page = service_client.get("/api/v1/recipients/?page_size=2").json()
    second_page = service_client.get(first_page["next"]).json()

    assert {r["id"] for r in by_locale} == {"a", "b"}
    assert {r["id"] for r in by_attribute} == {"a", "c"}
    assert [r["id"] for r in first_page["results"] + second_page["results"]] == ["c", "b", "a"]


def test_list_filters_email_case_insensitively_and_attributes_by_json_equality(service_client):
    RecipientFactory(external_id="a", email="Ana@Example.com", attributes={"age": 5, "tags": ["x"]})
    RecipientFactory(external_id="b", email="bo@example.com", attributes={"age": "5"})

    def ids(query):
        response = service_client.get(f"/api/v1/recipients/?{query}")
        assert response.status_code == 200, response.json()
        return {r["id"] for r in response.json()["results"]}

    assert ids("email=ana@example.COM") == {"a"}
    assert ids("email=&locale=") == {"a", "b"}  # empty: no filter
    assert ids("attributes.age=5") == {"b"}  # the string "5", not the number 5
    assert ids("attributes.age=5&email=bo@example.com") == {"b"}
    assert ids("attributes.missing=") == set()


@pytest.mark.parametrize("name", [
    "country__startswith", "country__isnull", "country__contains", "country__gt", "country')) OR 1=1 --",
    "country\" OR 1=1 --", "", "__class__",
])
def test_attribute_names_are_keys_never_lookups_or_sql(service_client, name):
    RecipientFactory(external_id="a", attributes={"country": "DE"})
    RecipientFactory(external_id="b", attributes={name: "DE"})

    response = service_client.get("/api/v1/recipients/", {f"attributes.{name}": "DE"})

    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == ["b"]  # the key named so, nothing else


def test_query_parameters_do_not_filter_a_detail_route(service_client):
    RecipientFactory(external_id="9", email="nine@example.com", locale="de")

    assert service_client.get("/api/v1/recipients/9/?email=other@example.com&locale=fr").status_code == 200
    assert service_client.delete("/api/v1/recipients/9/?attributes.x=y").status_code == 204
    assert not Recipient.objects.filter(external_id="9").exists()


def test_get_patch_and_delete_one_recipient(service_client):
    RecipientFactory(external_id="user@example.com", email="old@example.com")

    got = service_client.get("/api/v1/recipients/user@example.com/")
    patched = service_client.patch("/api/v1/recipients/user@example.com/", {"email": "new@example.com"}, format="json")

    assert got.json()["email"] == "old@example.com"
    assert patched.json()["email"] == "new@example.com"
    assert Recipient.objects.get(external_id="user@example.com").email == "new@example.com"


def test_patch_with_bad_email_is_400_and_changes_nothing(service_client):
    RecipientFactory(external_id="9", email="old@example.com")

    response = service_client.patch("/api/v1/recipients/9/", {"email": "nope"}, format="json")

    assert response.status_code == 400 and "email" in response.json()
    assert Recipient.objects.get(external_id="9").email == "old@example.com"


def test_deleting_a_recipient_erases_its_inbox(service_client):
    recipient = RecipientFactory(external_id="9")
    NotificationFactory.create_batch(3, recipient=recipient)
    kept = NotificationFactory()

    response = service_client.delete("/api/v1/recipients/9/")

    assert response.status_code == 204
    assert not Recipient.objects.filter(external_id="9").exists()
    assert list(Notification.objects.all()) == [kept]


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_recipient_is_404(service_client, method):
    assert getattr(service_client, method)("/api/v1/recipients/nobody/").status_code == 404
