"""The sans-I/O core and the paper broker driven as ``Engine.process`` drives them, for tests
that step a core quote by quote: an order goes through the send-time gate, then the broker; a
cancel carries its reason to the broker (as ``PaperExecution.cancel`` does)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.core import CancelOrder, EngineCore, SubmitOrder
from engine.paper_broker import PaperBroker


class CoreDriver:
    """Hands the core's output to the paper broker and its answers back to the core; keeps
    every event (``events``) and every cancel asked for (``cancels``)."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self.broker = PaperBroker(core.cfg.paper)
        self.events: list[Any] = []
        self.cancels: list[CancelOrder] = []

    def handle(self, items: Iterable[Any]) -> None:
        core = self.core
        for item in items:
            if type(item) is SubmitOrder:
                refused = core.refused_at_send(item)
                if refused is not None:
                    self.handle(refused)
                else:
                    self.handle(core.on_broker(self.broker.submit(item.order, core.now)))
            elif type(item) is CancelOrder:
                self.cancels.append(item)
                done = self.broker.cancel(item.client_order_id, core.now, item.reason)
                self.handle(core.on_broker(done))
            else:
                self.events.append(item)
