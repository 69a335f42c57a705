"""Segment parsing: pure logic, no database."""

import pytest

from campaigns.segments import (
    USER_IDS_MAX,
    AllUsers,
    Attribute,
    SegmentError,
    Subscribers,
    UserIds,
    segment_parse,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"type": "ALL_USERS"}, AllUsers()),
        ({"type": "USER_IDS", "ids": ["1", "2", "1"]}, UserIds(ids=("1", "2"))),
        ({"type": "ATTRIBUTE", "attribute": "country", "op": "eq", "value": "DE"}, Attribute("country", "eq", "DE")),
        ({"type": "ATTRIBUTE", "attribute": "plan", "op": "in", "value": ["pro", 3]}, Attribute("plan", "in", ["pro", 3])),
        ({"type": "TOPIC", "key": "post:42"}, Subscribers("post:42")),
        ({"type": "TOPIC", "key": "post:42", "exclude": ["7"]}, Subscribers("post:42", ("7",))),
    ],
)
def test_valid_segments_parse(raw, expected):
    assert segment_parse(raw) == expected
    assert segment_parse(segment_parse(raw).to_json()) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "SOME_USERS"}, "valid types: ALL_USERS, USER_IDS, ATTRIBUTE, TOPIC"),
        ({}, "valid types: ALL_USERS, USER_IDS, ATTRIBUTE, TOPIC"),
        ("ALL_USERS", "Must be an object"),
        ({"type": "USER_IDS", "ids": []}, "non-empty list"),
        ({"type": "USER_IDS"}, "non-empty list"),
        ({"type": "USER_IDS", "ids": [str(i) for i in range(USER_IDS_MAX + 1)]}, "at most 10000 ids"),
        ({"type": "USER_IDS", "ids": ["ok", "not ok"]}, "no space"),
        ({"type": "USER_IDS", "ids": [5]}, "user ids"),
        ({"type": "ATTRIBUTE", "attribute": "country", "op": "gt", "value": 1}, "valid ops: eq, in"),
        ({"type": "ATTRIBUTE", "attribute": "", "op": "eq", "value": 1}, "attribute"),
        ({"type": "ATTRIBUTE", "attribute": "a b", "op": "eq", "value": 1}, "attribute"),
        ({"type": "ATTRIBUTE", "attribute": "country", "op": "eq", "value": {"x": 1}}, "string, number or boolean"),
        ({"type": "ATTRIBUTE", "attribute": "country", "op": "in", "value": "DE"}, "a list of 1 to 1000"),
        ({"type": "ATTRIBUTE", "attribute": "country", "op": "in", "value": [[1]]}, "strings, numbers or booleans"),
        ({"type": "TOPIC"}, "TOPIC needs `key`"),
        ({"type": "TOPIC", "key": "x" * 201}, "1 to 200"),
        ({"type": "TOPIC", "key": "a b"}, "TOPIC needs `key`"),
        ({"type": "TOPIC", "key": "a\x00b"}, "TOPIC needs `key`"),
        ({"type": "TOPIC", "key": "k", "exclude": "7"}, "at most one user id"),
        ({"type": "TOPIC", "key": "k", "exclude": ["a b"]}, "at most one user id"),
    ],
)
def test_invalid_segments_say_what_is_valid(raw, message):
    with pytest.raises(SegmentError, match=message):
        segment_parse(raw)
