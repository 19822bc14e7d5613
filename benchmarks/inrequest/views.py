"""The common approach the ``pending`` benchmark compares with: the checkout request itself calls C2B and waits for
M-Pesa's answer (up to the customer's PIN window) while it holds a gunicorn thread.

Deliberately generous to that approach: no order, no stock and no database write, only the call, with the
process's shared, thread-safe :class:`mpesa.Client` (its connection pool and cached token), as the shop's own
status queries use it. The gateway, the configuration and the simulator are the shop's.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from kulipa.payments import gateway


@csrf_exempt  # a benchmark client, not a browser
@require_POST
def pay_in_request(request: HttpRequest) -> JsonResponse:
    """POST ``msisdn=...``: C2B for 10 MZN, answered when M-Pesa answers (the thread is held meanwhile)."""
    result = gateway.client().c2b_payment(
        amount="10",
        msisdn=request.POST["msisdn"],
        transaction_reference="T12345",
        third_party_reference=gateway.new_reference("W"),
    )
    return JsonResponse({"outcome": result.outcome.value, "code": result.code})
