"""Transactional tasks (docs/python.md): database effects exactly once. The tests run it."""

# --8<-- [start:task]
import tasklane
from sqlalchemy import text


@tasklane.task(name="billing.charge", transactional=True)
def charge(payload, db):
    """``db``: a connection in the transaction that also records this run's outcome."""
    db.execute(text("INSERT INTO charges (order_id, amount) VALUES (:order, :amount)"), payload)
    return {"charged": payload["amount"]}


# --8<-- [end:task]
