"""The API's contract: every core path of docs/architecture.md ("HTTP contract") is served
and documented."""

from backhaul_kit.config import Role
from billing.bootstrap import bootstrap
from billing.config import BillingSettings


def test_openapi_lists_the_core_paths_and_every_route_is_documented(tmp_path):
    runtime = bootstrap(BillingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/b.db"))
    schema = runtime.create_app(Role.API).openapi()
    paths = schema["paths"]
    for path in (
        "/services",
        "/accounts/{account_id}/services",
        "/accounts/{account_id}/transactions",
        "/accounts/{account_id}/invoices",
        "/invoices/{invoice_id}",
        "/accounts/{account_id}/balance",
        "/billing-runs",
        "/settings",
    ):
        assert path in paths, path
    undocumented = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        if not operation.get("description") and path not in ("/healthz", "/readyz", "/metrics")
    ]
    assert undocumented == []
    # Money is a decimal string in every answer, never a JSON number.
    invoice = schema["components"]["schemas"]["InvoiceOut"]["properties"]
    assert invoice["total"]["type"] == "string"
