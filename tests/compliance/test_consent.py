"""Consent records: append-only decisions per subject and purpose, normalised subjects, no PII audited."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.compliance.consent import consent_current, consent_history, consent_record
from apps.compliance.gdpr import SubjectError
from apps.compliance.models import ConsentRecord
from apps.compliance.selectors import audit_event_search

pytestmark = pytest.mark.django_db


def test_latest_decision_wins_and_the_history_is_kept(canary_tenants):
    earlier = timezone.now() - timedelta(days=3)
    with schema_context(canary_tenants.a.schema_name):
        consent_record(subject="Ana@Example.com", purpose="marketing", granted=True, source="web-chat", at=earlier)
        consent_record(subject="ana@example.com", purpose="marketing", granted=False, source="console")
        consent_record(subject="ana@example.com", purpose="analytics", granted=True)
        assert consent_current(subject="ANA@example.com", purpose="marketing") is False
        assert consent_current(subject="ana@example.com", purpose="analytics") is True
        assert consent_current(subject="ana@example.com", purpose="whatsapp") is None
        history = [(c.purpose, c.granted, c.source) for c in consent_history(subject="ana@example.com")]
        assert history == [("analytics", True, ""), ("marketing", False, "console"), ("marketing", True, "web-chat")]
        events = list(audit_event_search(object_type="consent"))
        assert [e.action for e in events] == ["consent.granted", "consent.withdrawn", "consent.granted"]
        assert all("ana@example.com" not in e.summary.lower() and "ana@" not in e.object_id for e in events)
    with schema_context(canary_tenants.b.schema_name):  # another tenant knows nothing of it
        assert consent_current(subject="ana@example.com", purpose="marketing") is None


def test_phone_subjects_are_one_person_however_written(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        consent_record(subject="+55 (11) 98765-4321", purpose="whatsapp", granted=True)
        assert consent_current(subject="+5511987654321", purpose="whatsapp") is True
        # With or without the "+": the same number.
        consent_record(subject="5511987654321", purpose="sms", granted=False)
        assert consent_current(subject="+55 11 98765-4321", purpose="sms") is False
        assert consent_current(subject="5511987654321", purpose="whatsapp") is True
        assert consent_history(subject="+5511987654321").count() == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "reason"),
    [
        ({"subject": "ana@", "purpose": "marketing", "granted": True}, SubjectError, "not a valid e-mail"),
        ({"subject": "ana@example.com", "purpose": "Marketing!", "granted": True}, ValueError, "lower-case name"),
        ({"subject": "ana@example.com", "purpose": "marketing", "granted": "yes"}, ValueError, "true or false"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_recorded(canary_tenants, kwargs, error, reason):
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(error, match=reason):
            consent_record(**kwargs)
        assert not ConsentRecord.objects.exists()
