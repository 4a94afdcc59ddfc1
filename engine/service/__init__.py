"""`miss-screen serve`: one web service for clinicians and EHRs, built on one `Screener`.

- `/` — the web form that asks only the next question that can change the verdict (form.py);
- `/cds-services` — the CDS Hooks 2.0 service that returns the screen as a card (cds.py).

Needs the optional extra `miss-screen[service]` (FastAPI, uvicorn, python-multipart, PyJWT).
"""
