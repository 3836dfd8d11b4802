"""Settings refuse a null where only a value makes sense, instead of storing it."""

import pytest

pytestmark = pytest.mark.integration


async def test_a_null_setting_is_refused_and_settings_stay_readable(local_service):
    _, client = local_service
    for field in ("final_invoice_proration", "invoice_due_days", "delinquency_grace_days"):
        refused = await client.put("/settings", json={field: None})
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["message"]
    assert (await client.get("/settings")).status_code == 200
    cleared = await client.put("/settings", json={"accounting_period_close": None})
    assert cleared.status_code == 200 and cleared.json()["accounting_period_close"] is None
