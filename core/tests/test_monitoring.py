import pytest

from core import metrics, monitoring
from core.consumer import BatchStats, ConsumerStatus
from core.models import ConsumerHeartbeat


@pytest.mark.django_db
def test_status_is_a_row_per_process_while_it_runs_and_none_after_it_stops():
    status = ConsumerStatus(consumer="worker", process="worker@h:1", group="g", records_total=5,
                            lag={("t.notifications.send", 0): 3})
    monitoring.status_record(status)
    row = ConsumerHeartbeat.objects.get()
    assert (row.process, row.group, row.records_total, row.lag) == ("worker@h:1", "g", 5, {"t.notifications.send[0]": 3})
    assert metrics.CONSUMER_LAG.labels("worker", "t.notifications.send", 0)._value.get() == 3

    monitoring.status_record(ConsumerStatus(consumer="worker", process="worker@h:1", group="g", records_total=5,
                                            lag={}, stopped=True))
    assert not ConsumerHeartbeat.objects.exists()


def test_a_batch_counts_its_records_per_topic_and_its_invalid_ones():
    consumed = metrics.RECORDS_CONSUMED.labels("monitoring-test", "t1")._value.get()
    invalid = metrics.RECORDS_INVALID.labels("monitoring-test")._value.get()
    monitoring.batch_record(BatchStats(consumer="monitoring-test", seconds=0.01, handled=7, invalid=2,
                                       records_per_topic={"t1": 7}))
    assert metrics.RECORDS_CONSUMED.labels("monitoring-test", "t1")._value.get() == consumed + 7
    assert metrics.RECORDS_INVALID.labels("monitoring-test")._value.get() == invalid + 2
