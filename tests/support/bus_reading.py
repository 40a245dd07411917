"""Reading event bus subscriptions in tests, failing on a hang."""

from __future__ import annotations

import asyncio

from twinforge.runtime.events import Gap, Subscription, TwinEvent


async def take(subscription: Subscription, count: int, timeout: float) -> list[TwinEvent | Gap]:
    """The next ``count`` items of ``subscription``; TimeoutError after ``timeout`` s."""

    async def _take() -> list[TwinEvent | Gap]:
        items: list[TwinEvent | Gap] = []
        async for item in subscription:
            items.append(item)
            if len(items) == count:
                break
        return items

    return await asyncio.wait_for(_take(), timeout)
