"""Workflows: chain, group and chord, as in Celery's canvas, made durable by Postgres.

::

    from tasklane.workflows import chain, chord, group

    chain(fetch.s({"url": u}), parse.s(), store.s()).delay()  # each gets the result before
    group(resize.s({"image": i}) for i in images).delay()     # results in member order
    chord([resize.s({"image": i}) for i in images], index.s()).delay().get(timeout=60)

A workflow is planned whole when it is submitted: every step becomes a task row at once, in one
transaction, the first steps ``pending`` (and sent), the others ``waiting``. Each step records
the steps whose results it takes (``after``) and the steps that wait for it (``then``). When a
step succeeds, the transaction that records its outcome also releases each waiting step whose
predecessors have now all succeeded: it locks that step's row, checks, and makes it
``pending`` with its payload. Two predecessors finishing at once queue on that row lock, so the
second sees the first's commit: a chord's body is released once, by whichever of its header's
members finishes last, whatever the duplicates, crashes and retries. A member that fails for
good fails the workflow; its successors wait, and retrying it resumes the workflow.

What a step receives:

- the first steps: their own payload (required);
- a later step without a payload of its own (``b.s()``): the result before it, which is a list
  (in member order) when that was a group, and a chord's body gets its header's list;
- a later step with one (``b.s(p)``): ``{"payload": p, "previous": <that result>}``.

This module is pure: descriptions, their validation and their plan. The store holds the rows,
the service submits, the executor releases.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union, cast

from tasklane.errors import InvalidRequest
from tasklane.ids import new_id
from tasklane.submitters import submitter

#: The most tasks one workflow submitted over HTTP may hold (the Python API sets no limit).
MAX_TASKS = 1000
#: The most links (a step waiting for another) one workflow may hold. A group followed by a
#: group links every member of one to every member of the other: 500 after 500 is 250,000
#: links, and each member's outcome would check all of them. Put one step between the two
#: (a chord's body) and it is 1,000.
MAX_LINKS = 10_000
#: The deepest a description may nest (a chain in a group in a chord ...).
MAX_NESTING = 32


class _Unbound:
    """No payload of its own: the step takes the result before it."""

    def __repr__(self) -> str:
        return "UNBOUND"


UNBOUND: Any = _Unbound()


class _Canvas:
    """What chains, groups, chords and signatures share: ``|`` and submission."""

    def __or__(self, other: Node) -> Chain:
        left = self.steps if isinstance(self, Chain) else (self,)
        right = other.steps if isinstance(other, Chain) else (other,)
        return Chain(tuple(left) + tuple(right))

    def delay(self, **options: Any) -> Any:
        return self.apply_async(**options)

    def apply_async(self, **options: Any) -> Any:
        """Submit the workflow; returns a :class:`tasklane.WorkflowHandle`. ``connection``: the
        caller's open transaction (the workflow exists only if it commits)."""
        return submitter("submit_workflow")(self, **options)


@dataclass(frozen=True)
class Signature(_Canvas):
    """One task of a workflow, with its own payload or (unbound) the result before it."""

    task: str
    payload: Any = UNBOUND

    @property
    def bound(self) -> bool:
        return self.payload is not UNBOUND


@dataclass(frozen=True)
class Chain(_Canvas):
    """Steps run one after another; each gets the result of the one before."""

    steps: tuple[Node, ...]


@dataclass(frozen=True)
class Group(_Canvas):
    """Members run side by side; the group's result is their results, in member order."""

    members: tuple[Node, ...]


@dataclass(frozen=True)
class Chord(_Canvas):
    """A group, then a body that gets the group's results: run once, after all of them."""

    header: Group
    body: Node


Node = Union[Signature, Chain, Group, Chord]  # noqa: UP007 (a runtime alias, read by isinstance)


def chain(*steps: Node | Iterable[Node]) -> Chain:
    """``chain(a.s(p), b.s(), c.s())``, as Celery's; also ``a.s(p) | b.s() | c.s()``."""
    return Chain(_nodes(steps))


def group(*members: Node | Iterable[Node]) -> Group:
    """``group(a.s(1), a.s(2))`` or ``group(a.s(i) for i in items)``."""
    return Group(_nodes(members))


def chord(header: Group | Iterable[Node], body: Node) -> Chord:
    """``chord(group(...), callback.s())``: the callback gets the list of the group's results."""
    return Chord(header if isinstance(header, Group) else Group(tuple(header)), body)


def _nodes(items: Sequence[Node | Iterable[Node]]) -> tuple[Node, ...]:
    if len(items) == 1 and not isinstance(items[0], _Canvas):
        return tuple(items[0])  # one iterable of nodes (a generator)
    return tuple(items)  # type: ignore[arg-type]


# -- JSON descriptions (the HTTP API's, and how a workflow is shown) ----------------------------
def parse(description: Any, path: str = "workflow", depth: int = 0) -> Node:
    """A JSON description as a tree: ``{"task", "payload"?}``, ``{"chain": [...]}``,
    ``{"group": [...]}``, ``{"chord": {"header": [...], "body": {...}}}``, nested. Its shape
    only (400 with where it is wrong); task names and payloads are checked by the service."""
    if depth > MAX_NESTING:
        raise InvalidRequest(f"{path}: a workflow nests at most {MAX_NESTING} levels")
    if not isinstance(description, dict):
        raise InvalidRequest(f"{path}: expected an object (a task, chain, group or chord)")
    keys = set(description)
    if "task" in keys:
        if keys - {"task", "payload"}:
            raise InvalidRequest(f"{path}: a task has 'task' and 'payload' only")
        name = description["task"]
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{path}.task: a non-empty string")
        return Signature(name, description.get("payload", UNBOUND))
    if len(keys) != 1:
        raise InvalidRequest(f"{path}: one of 'task', 'chain', 'group' or 'chord'")
    (kind,) = keys
    if kind in ("chain", "group"):
        items = _list(description[kind], f"{path}.{kind}")
        children = tuple(
            parse(item, f"{path}.{kind}[{i}]", depth + 1) for i, item in enumerate(items)
        )
        return Chain(children) if kind == "chain" else Group(children)
    if kind == "chord":
        spec = description["chord"]
        if not isinstance(spec, dict) or set(spec) != {"header", "body"}:
            raise InvalidRequest(f"{path}.chord: an object with 'header' (a list) and 'body'")
        items = _list(spec["header"], f"{path}.chord.header")
        header = tuple(
            parse(item, f"{path}.chord.header[{i}]", depth + 1) for i, item in enumerate(items)
        )
        return Chord(Group(header), parse(spec["body"], f"{path}.chord.body", depth + 1))
    raise InvalidRequest(f"{path}: one of 'task', 'chain', 'group' or 'chord', not {kind!r}")


def _list(value: Any, path: str) -> list:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{path}: a non-empty list")
    return value


def describe(node: Node) -> dict[str, Any]:
    """The JSON description of a tree (:func:`parse`'s inverse)."""
    if isinstance(node, Signature):
        return {"task": node.task} | ({"payload": node.payload} if node.bound else {})
    if isinstance(node, Chain):
        return {"chain": [describe(n) for n in node.steps]}
    if isinstance(node, Group):
        return {"group": [describe(n) for n in node.members]}
    header = [describe(n) for n in node.header.members]
    return {"chord": {"header": header, "body": describe(node.body)}}


# -- planning: a tree → its task rows --------------------------------------------------------
#: Where a step's input (or the workflow's result) comes from: a task id, or a list of them,
#: nested as the groups that produced them.
Template = Union[str, list["Template"]]  # noqa: UP007


@dataclass
class Step:
    """One task of a planned workflow: its row's place in the graph."""

    id: uuid.UUID
    task: str
    payload: Any
    #: What it receives before its own payload (None: nothing, it is a first step).
    input: Template | None
    then: list[str] = field(default_factory=list)

    @property
    def after(self) -> list[str]:
        return flatten(self.input) if self.input is not None else []

    @property
    def bound(self) -> bool:
        return self.payload is not UNBOUND

    def step_json(self) -> dict[str, Any]:
        """The row's ``step`` column."""
        return {"after": self.after, "input": self.input, "bound": self.bound, "then": self.then}


@dataclass
class Plan:
    """A workflow's tasks in description order, and where its result comes from."""

    id: uuid.UUID
    steps: list[Step]
    output: Template


def plan(node: Node, max_tasks: int | None = None, max_links: int = MAX_LINKS) -> Plan:
    """Give every task of the tree an id, what it receives and who waits for it. Refuses an
    empty chain or group, more than ``max_tasks`` tasks or ``max_links`` links, and a first
    step without a payload."""
    steps: list[Step] = []

    def place(node: Node, input_: Template | None) -> Template:
        if isinstance(node, Signature):
            if input_ is None and not node.bound:
                raise InvalidRequest(
                    f"{node.task}: a first step of a workflow needs a payload (only later steps "
                    "take the result before them)"
                )
            if max_tasks is not None and len(steps) >= max_tasks:
                raise InvalidRequest(f"a workflow holds at most {max_tasks} tasks")
            step = Step(new_id(), node.task, node.payload, input_)
            steps.append(step)
            return str(step.id)
        if isinstance(node, Chord):
            return place(Chain((node.header, node.body)), input_)
        children = node.steps if isinstance(node, Chain) else node.members
        if not children:
            raise InvalidRequest(f"an empty {type(node).__name__.lower()}")
        if isinstance(node, Group):
            return [place(child, input_) for child in children]
        for child in children:
            input_ = place(child, input_)
        return cast(Template, input_)  # a chain has a child (checked above): a last step

    output = place(node, None)
    links = sum(len(step.after) for step in steps)
    if links > max_links:
        raise InvalidRequest(
            f"the workflow links its steps {links} times, over {max_links}: a group followed "
            "by a group links every member to every member; put one step between them"
        )
    by_id = {str(s.id): s for s in steps}
    for step in steps:
        for before in step.after:
            by_id[before].then.append(str(step.id))
    return Plan(new_id(), steps, output)


def flatten(template: Template) -> list[str]:
    """The task ids of a template, in order."""
    if isinstance(template, str):
        return [template]
    return [i for t in template for i in flatten(t)]


def fill(template: Template, results_json: dict[str, str]) -> str:
    """The template with each task id replaced by that task's result, as JSON text built from
    the stored results' text (no result is parsed)."""
    if isinstance(template, str):
        return results_json[template]
    return "[" + ",".join(fill(t, results_json) for t in template) + "]"


def payload_json(step: dict[str, Any], own_json: str | None, results_json: dict[str, str]) -> str:
    """A released step's payload: the result before it, or ``{"payload", "previous"}`` when it
    has a payload of its own (``step`` is its row's ``step`` column)."""
    previous = fill(step["input"], results_json)
    if not step["bound"]:
        return previous
    own = own_json if own_json is not None else "null"
    return f'{{"payload":{own},"previous":{previous}}}'


def ids_in(template: Template) -> list[uuid.UUID]:
    """The task ids a result template names (the tasks whose results make the result)."""
    if isinstance(template, str):
        return [uuid.UUID(template)]
    return [i for t in template for i in ids_in(t)]


def assemble(template: Template, results: dict[str, Any]) -> Any:
    """The template with each task id replaced by that task's (parsed) result."""
    if isinstance(template, str):
        return results[template]
    return [assemble(t, results) for t in template]


def status_of(statuses: Sequence[str]) -> str:
    """A workflow's status from its tasks': ``failed`` once one failed (retrying it resumes
    the workflow), else ``cancelled`` once one was, ``succeeded`` when all did, else
    ``running``."""
    if "failed" in statuses:
        return "failed"
    if "cancelled" in statuses:
        return "cancelled"
    if all(s == "succeeded" for s in statuses):
        return "succeeded"
    return "running"
