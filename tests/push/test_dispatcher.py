"""The dispatcher: the right provider, retries inside the deadline, dead tokens handed back."""

from __future__ import annotations

from collections.abc import Sequence

from ringfence.push.dispatcher import BACKOFF_FIRST_S, MAX_TRIES, PushDispatcher
from ringfence.push.provider import (
    Delivered,
    Misconfigured,
    Notification,
    ProviderName,
    PushKind,
    PushResult,
    PushTarget,
    RetryAfter,
    TokenDead,
)
from tests.support.clock import FakeClock

CALL = Notification(PushKind.CALL, "p")
TARGET = PushTarget(ProviderName.FCM, "proj", "tok")


class Scripted:
    """A provider that answers from a script, for the dispatcher's own rules."""

    name = ProviderName.FCM

    def __init__(self, answers: Sequence[PushResult]) -> None:
        self.answers = list(answers)
        self.sent = 0

    def serves(self, target: PushTarget) -> bool:
        return target.app == "proj"

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        self.sent += 1
        return self.answers.pop(0)

    async def aclose(self) -> None:
        pass


class Sleeper:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)


def dispatcher(
    provider: Scripted, clock: FakeClock, dead: list[str] | None = None
) -> tuple[PushDispatcher, Sleeper]:
    sleeper = Sleeper(clock)

    async def on_dead(target: PushTarget, result: TokenDead) -> None:
        assert dead is not None
        dead.append(result.reason)

    return PushDispatcher([provider], clock, on_token_dead=on_dead, sleep=sleeper), sleeper


async def test_temporary_failures_are_retried_with_backoff_and_retry_after() -> None:
    clock = FakeClock()
    provider = Scripted([RetryAfter("503"), RetryAfter("429", 2.0), Delivered("id")])
    sender, sleeper = dispatcher(provider, clock)
    result = await sender.send(TARGET, CALL, deadline=clock.monotonic() + 30)
    assert result == Delivered("id")
    assert sleeper.slept == [BACKOFF_FIRST_S, 2.0]


async def test_no_retry_starts_after_the_deadline() -> None:
    clock = FakeClock()
    provider = Scripted([RetryAfter("503", 1.0), RetryAfter("503", 10.0), Delivered()])
    sender, sleeper = dispatcher(provider, clock)
    result = await sender.send(TARGET, CALL, deadline=clock.monotonic() + 5)
    assert result == RetryAfter("503", 10.0)
    assert provider.sent == 2
    assert sleeper.slept == [1.0]


async def test_tries_are_capped() -> None:
    clock = FakeClock()
    provider = Scripted([RetryAfter("503", 0.0)] * MAX_TRIES)
    sender, _ = dispatcher(provider, clock)
    assert isinstance(await sender.send(TARGET, CALL, deadline=clock.monotonic() + 60), RetryAfter)
    assert provider.sent == MAX_TRIES


async def test_a_dead_token_is_handed_back_and_not_retried() -> None:
    clock = FakeClock()
    dead: list[str] = []
    provider = Scripted([TokenDead("FCM 404 UNREGISTERED")])
    sender, sleeper = dispatcher(provider, clock, dead)
    assert await sender.send(TARGET, CALL, deadline=clock.monotonic() + 30) == TokenDead(
        "FCM 404 UNREGISTERED"
    )
    assert dead == ["FCM 404 UNREGISTERED"]
    assert sleeper.slept == []


async def test_a_target_no_provider_serves_is_a_configuration_fault() -> None:
    clock = FakeClock()
    provider = Scripted([])
    sender, _ = dispatcher(provider, clock)
    other = PushTarget(ProviderName.APNS, "org.example.app", "ab" * 16)
    result = await sender.send(other, CALL, deadline=clock.monotonic() + 30)
    assert result == Misconfigured("no apns settings for app 'org.example.app'")
    assert provider.sent == 0
