"""Order statuses change only through the one transition table (``ORDER_TRANSITIONS``).

The table itself (every allowed change works, every other one raises and changes nothing), a
property over random status sequences, the paper broker's reported statuses following the table,
restore keeping a finished order finished, and an ``ast`` scan of ``engine/`` that fails on any
status write outside ``Order.move_to``. The venue side (reports the table forbids are not
believed) is pinned in ``tests/test_venues_broker.py``.
"""

from __future__ import annotations

import ast
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import PaperBrokerConfig
from engine.journal import Journal
from engine.paper_broker import PaperBroker
from engine.restore import restore_state
from engine.types import (
    NS_PER_MS,
    ORDER_TRANSITIONS,
    IllegalTransition,
    Order,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Quote,
    Side,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("COCKPIT_STATUS_EXAMPLES", "300"))
T0 = 1_700_000_000 * 1_000_000_000
S = OrderStatus
TERMINAL = {S.FILLED, S.CANCELED, S.REJECTED}
ALL_PAIRS = list(itertools.product(S, S))


def _order(status: OrderStatus = S.PENDING_NEW, coid: str = "o1", **kw: object) -> Order:
    fields: dict[str, object] = {
        "client_order_id": coid,
        "intent_id": coid,
        "strategy_id": "s1",
        "symbol": "BTC/USDT",
        "venue": "sim",
        "side": Side.BUY,
        "order_type": OrderType.MARKET,
        "qty": 1.0,
        "limit_price": None,
        "status": status,
        "ts_created": T0,
        "ts_updated": T0,
    }
    fields.update(kw)
    return Order(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the table


def test_the_table_covers_every_status_and_terminal_states_lead_nowhere() -> None:
    assert set(ORDER_TRANSITIONS) == set(S)
    for status, successors in ORDER_TRANSITIONS.items():
        assert status.successors is successors
        assert (not successors) == status.is_terminal
    # Nothing leads back to "not yet acknowledged", nor from any live state back to NEW.
    assert all(S.PENDING_NEW not in nxt for nxt in ORDER_TRANSITIONS.values())
    assert S.NEW not in S.PARTIALLY_FILLED.successors
    # What the brokers need: a venue's ack can come with fills or a refusal, a partial fill
    # with more of them, and anything live can still be canceled.
    assert S.PENDING_NEW.successors == {S.NEW, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.REJECTED}
    assert S.NEW.successors == {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.REJECTED}
    assert S.PARTIALLY_FILLED.successors == {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED}


@pytest.mark.parametrize(("before", "after"), [p for p in ALL_PAIRS if p[1] in p[0].successors])
def test_every_allowed_change_works(before: OrderStatus, after: OrderStatus) -> None:
    o = _order(before, reason="old")
    o.move_to(after, T0 + 5, "why")
    assert (o.status, o.ts_updated, o.reason) == (after, T0 + 5, "why")
    o2 = _order(before, reason="old")
    if after in o2.status.successors:
        o2.move_to(after, T0 + 6)  # no reason given: the old one stays
        assert (o2.status, o2.reason) == (after, "old")


@pytest.mark.parametrize(("before", "after"), [p for p in ALL_PAIRS if p[1] not in p[0].successors])
def test_every_forbidden_change_raises_and_changes_nothing(
    before: OrderStatus, after: OrderStatus
) -> None:
    o = _order(before, reason="old")
    with pytest.raises(IllegalTransition) as err:
        o.move_to(after, T0 + 5, "why")
    assert (o.status, o.ts_updated, o.reason) == (before, T0, "old")
    message = str(err.value)
    assert f"{before} -> {after}" in message and "o1" in message and "\n" not in message
    assert isinstance(err.value, ValueError)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_random_status_sequences_follow_the_table_and_never_leave_a_terminal_state(
    wanted: list[OrderStatus],
) -> None:
    o = _order()
    taken = [o.status]
    for i, status in enumerate(wanted):
        legal = status in ORDER_TRANSITIONS[o.status]
        try:
            o.move_to(status, T0 + i)
        except IllegalTransition:
            assert not legal
        else:
            assert legal
            taken.append(status)
        assert o.status is taken[-1]
    for a, b in itertools.pairwise(taken):
        assert b in ORDER_TRANSITIONS[a]
    first_end = next((i for i, s in enumerate(taken) if s in TERMINAL), None)
    if first_end is not None:
        assert taken[first_end:] == [taken[first_end]]  # nothing after it, live or not


# ---------------------------------------------------------------------- the paper broker


def _quote(ts: int, bid: float, spread: float, size: float) -> Quote:
    return Quote("BTC/USDT", bid, bid + spread, size, size, ts, ts)


_ops = st.one_of(
    st.tuples(
        st.just("submit"),
        st.sampled_from(list(Side)),
        st.floats(0.1, 5.0),
        st.one_of(st.none(), st.floats(95.0, 105.0)),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(
        st.just("quote"),
        st.floats(95.0, 105.0),
        st.floats(0.01, 2.0),
        st.floats(0.1, 3.0),
        st.integers(1, 400),
    ),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(_ops, max_size=40))
def test_paper_broker_reports_follow_the_table(ops: list[tuple]) -> None:
    """Whatever the market and the cancels do, every order the paper broker reports walks the
    table from PENDING_NEW, and nothing is reported for it after it finished."""
    broker = PaperBroker(PaperBrokerConfig(seed=3, latency_median_ms=50.0))
    now = T0
    n = 0
    seen: dict[str, list[OrderStatus]] = {}
    for op in ops:
        if op[0] == "submit":
            n += 1
            _, side, qty, limit = op
            o = _order(
                coid=f"o{n}",
                side=side,
                qty=qty,
                order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
                limit_price=limit,
            )
            seen[o.client_order_id] = [S.PENDING_NEW]
            out = broker.submit(o, now)
        elif op[0] == "cancel":
            out = broker.cancel(f"o{op[1]}", now)
        else:
            _, bid, spread, size, step_ms = op
            now += step_ms * NS_PER_MS
            out = broker.on_quote(_quote(now, bid, spread, size))
        for item in out:
            if isinstance(item, OrderUpdate):
                walk = seen[item.order.client_order_id]
                assert item.order.status in walk[-1].successors, (walk, item.order.status)
                walk.append(item.order.status)


def test_paper_restore_acknowledges_a_pending_order_and_skips_finished_ones() -> None:
    broker = PaperBroker(PaperBrokerConfig(seed=1))
    pending, done = _order(S.PENDING_NEW, "p"), _order(S.FILLED, "f", filled_qty=1.0)
    broker.restore([pending, done], T0 + 10)
    assert [(o.client_order_id, o.status) for o in broker.open_orders()] == [("p", S.NEW)]
    assert pending.status is S.PENDING_NEW  # the broker moved its own copy


# ---------------------------------------------------------------------- restore


async def test_restore_keeps_a_finished_order_finished(tmp_path: Path) -> None:
    """A journal (written before the table) with CANCELED then PARTIALLY_FILLED for one order:
    the order stays canceled (not reopened, so nothing resends or rests it), and the row is
    reported."""
    path = tmp_path / "journal.sqlite"
    journal = await Journal.open(path)
    new = _order(S.NEW, "x1", limit_price=100.0, order_type=OrderType.LIMIT)
    canceled = _order(S.CANCELED, "x1", limit_price=100.0, order_type=OrderType.LIMIT)
    late = _order(
        S.PARTIALLY_FILLED, "x1", limit_price=100.0, order_type=OrderType.LIMIT, filled_qty=0.5
    )
    for i, o in enumerate([new, canceled, late]):
        journal.append("order", T0 + i, {"order": o.to_dict()})
    await journal.close()
    state = restore_state(path)
    assert [o.status for o in state.orders] == [S.CANCELED]
    assert state.open_orders == []
    assert len(state.order_anomalies) == 1
    assert "x1" in state.order_anomalies[0] and "kept canceled" in state.order_anomalies[0]


# ---------------------------------------------------------------------- no other writer

# Files still allowed a direct status write (file -> how many): none. An entry with fewer
# writes than listed fails too, so the list cannot go stale.
NOT_YET_CONVERTED: dict[str, int] = {}
THE_ONE_WRITER = ("engine/types.py", "Order.move_to")


def _status_writes(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, where) of every status write: ``x.status = / += / : T =`` (tuple targets
    included), ``replace(x, status=...)`` and ``setattr(x, "status", ...)``; ``where`` is the
    enclosing ``Class.function``."""
    found: list[tuple[int, str]] = []

    def targets(node: ast.expr) -> list[ast.expr]:
        if isinstance(node, ast.Tuple | ast.List):
            return [t for e in node.elts for t in targets(e)]
        if isinstance(node, ast.Starred):
            return targets(node.value)
        return [node]

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            scope = (*scope, node.name)
        where = ".".join(scope)
        hits: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            hits = [t for tgt in node.targets for t in targets(tgt)]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            hits = [node.target]
        for t in hits:
            if isinstance(t, ast.Attribute) and t.attr == "status":
                found.append((t.lineno, where))
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name == "replace" and any(k.arg == "status" for k in node.keywords):
                found.append((node.lineno, where))
            if (
                name in ("setattr", "__setattr__")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value == "status"
            ):
                found.append((node.lineno, where))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(source, filename), ())
    return found


def test_the_scan_sees_every_shape_of_status_write() -> None:
    src = (
        "class A:\n"
        "    def f(self, o, p):\n"
        "        o.status = 1\n"
        "        o.status, o.ts = 1, 2\n"
        "        [p.x, *p.status] = 1, 2\n"
        "        o.status += 1\n"
        "        o.status: int = 1\n"
        "        dataclasses.replace(o, status=1)\n"
        "        replace(o, reason='x')\n"
        "        setattr(o, 'status', 1)\n"
        "        object.__setattr__(o, 'status', 1)\n"
        "        x = o.status\n"
    )
    assert [line for line, _ in _status_writes(src, "x.py")] == [3, 4, 5, 6, 7, 8, 10, 11]
    assert {where for _, where in _status_writes(src, "x.py")} == {"A.f"}


def test_no_order_status_is_written_outside_the_transition_method() -> None:
    offenders: list[str] = []
    counts: dict[str, int] = {}
    for path in sorted((REPO / "engine").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for line, where in _status_writes(path.read_text(), rel):
            if (rel, where) == THE_ONE_WRITER:
                continue
            counts[rel] = counts.get(rel, 0) + 1
            if rel not in NOT_YET_CONVERTED:
                offenders.append(f"{rel}:{line} ({where})")
    assert not offenders, (
        "order status written directly; use order.move_to(status, ts, reason), which checks "
        "ORDER_TRANSITIONS: " + ", ".join(offenders)
    )
    for rel, allowed in NOT_YET_CONVERTED.items():
        have = counts.get(rel, 0)
        assert have <= allowed, f"{rel}: {have} direct status writes, only {allowed} allowed"
        assert have == allowed, (
            f"{rel} has {have} direct status writes now, not {allowed}: lower or remove its "
            "entry in NOT_YET_CONVERTED"
        )
    assert THE_ONE_WRITER[1] in {
        w for _, w in _status_writes((REPO / THE_ONE_WRITER[0]).read_text(), THE_ONE_WRITER[0])
    }
