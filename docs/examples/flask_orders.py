"""Enqueue inside your own transaction: an order and its confirmation, together or not at all.

A Flask view stores an order with SQLAlchemy and submits the task that confirms it in the same
transaction (``connection=session``). If anything fails before the commit, neither the order
nor the task exists, and no message is ever sent; once it commits, the message goes out. The
tests run this file (tests/integration/test_python_api.py).

Run it against the local stack:  ``DATABASE_URL=... flask --app flask_orders run``
"""

from __future__ import annotations

import os

import tasklane
from flask import Flask, jsonify, request
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

engine = create_engine(os.environ["DATABASE_URL"])


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]
    quantity: Mapped[int]


# The task lives in a module the consumer and the workers import (TASK_MODULES).
@tasklane.task(name="orders.confirm", lane="lambda")
def confirm(payload: dict) -> dict:
    return {"order": payload["order_id"], "confirmed": True}


app = Flask(__name__)


@app.post("/orders")
def create_order():
    body = request.get_json()
    try:
        # --8<-- [start:enqueue]
        with Session(engine) as session, session.begin():
            order = Order(item=body["item"], quantity=body["quantity"])
            session.add(order)
            session.flush()  # the order's id, still uncommitted
            if order.quantity < 1:
                raise ValueError("quantity must be at least 1")
            order_id = order.id
            handle = confirm.delay({"order_id": order_id}, connection=session)
        # --8<-- [end:enqueue]
    except ValueError as exc:  # rolled back: no order, no task, no message
        return jsonify(error=str(exc)), 400
    return jsonify(order_id=order_id, task_id=str(handle.id)), 201
