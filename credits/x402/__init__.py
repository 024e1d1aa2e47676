"""x402 pay-per-request, one module per step of a paid request.

| step | module | what |
|---|---|---|
| wire format | ``protocol`` | v2/v1 documents (official ``x402`` schemas), header decoding, EIP-712 signature check |
| 1 quote | ``quotes`` | the offer behind a 402: a row, an audit record, a Redis copy |
| 2 verify | ``verify`` | the payment against its quote, in the order of the refusal codes |
| 3 settle | ``settle`` | the facilitator client (``/verify``, ``/settle``) behind the ``settlement`` breaker |
| 4 credit note | ``credit_notes`` | what a paid request did not use, owed to the payer's wallet |
| pipeline | ``payments`` | ``x402_pay``: the short transactions that tie the steps together, once per authorization |
| HTTP | ``api`` | ``POST /api/v1/x402/invoke`` and ``POST /api/v1/credits/x402`` |
"""
