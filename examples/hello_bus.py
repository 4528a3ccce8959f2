"""A small smart-home on the loomk bus: sensors, a camera, an alarm and a display.

Run it with ``make demo`` (or ``python examples/hello_bus.py``). Everything is offline and
deterministic. It shows wildcard subscriptions, the three QoS lanes, overflow policies
(``drop_oldest`` for camera frames, ``latest`` for a dashboard view) and the bus statistics.
"""

from __future__ import annotations

import json

import trio

import loomk
from loomk import Event, Kernel, Overflow, QoS

ROOMS = ("kitchen", "garage", "attic")
READINGS = {  # degrees Celsius per round
    "kitchen": (21.0, 21.5, 22.0, 22.5),
    "garage": (14.0, 13.5, 13.0, 12.5),
    "attic": (29.0, 31.5, 34.0, 36.5),
}
ALARM_AT = 35.0
FRAMES = 200


async def thermometers(kernel: Kernel) -> None:
    """Publish one reading per room and round on ``sensors.{room}.temp`` (batched)."""
    for round_ in range(4):
        for room in ROOMS:
            reading = {"room": room, "celsius": READINGS[room][round_]}
            await kernel.bus.publish(
                f"sensors.{room}.temp",
                Event("temp", json.dumps(reading).encode(), source=f"thermo.{room}"),
            )


async def camera(kernel: Kernel) -> None:
    """A camera that produces frames faster than the display can show them."""
    for frame in range(FRAMES):
        await kernel.bus.publish(
            "camera.front.frame", Event("frame", frame.to_bytes(4, "big"), source="camera.front")
        )


async def alarm(kernel: Kernel, sub: loomk.Subscription, done: trio.Event) -> None:
    """Watch every temperature (``sensors.*.temp``) and raise an alert above the threshold."""
    async for _, event in sub:
        reading = json.loads(event.payload)
        if reading["celsius"] >= ALARM_AT:
            alert = Event("alert", event.payload, source="alarm", priority=90)
            await kernel.bus.publish(f"alerts.{reading['room']}.heat", alert.with_thread("heat"))
    done.set()


async def notifier(sub: loomk.Subscription, lines: list[str]) -> None:
    """Print every alert (``alerts.>``)."""
    async for topic, event in sub:
        reading = json.loads(event.payload)
        lines.append(f"ALERT on {topic}: {reading['room']} at {reading['celsius']} C")


async def main(kernel: Kernel) -> None:
    bus = kernel.bus
    alarm_sub = bus.subscribe("sensors.*.temp", qos=QoS.BATCHED, event_types=["temp"])
    alerts_sub = bus.subscribe("alerts.>", qos=QoS.BATCHED)
    # The dashboard only ever needs the newest reading per room: conflate per topic.
    dashboard = bus.subscribe("sensors.>", qos=QoS.BACKGROUND, overflow=Overflow.latest())
    # The display shows live frames; old ones are worthless, so keep the 8 newest.
    display = bus.subscribe("camera.*.frame", qos=QoS.REALTIME, capacity=8)

    lines: list[str] = []
    alarm_done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(alarm, kernel, alarm_sub, alarm_done)
        nursery.start_soon(notifier, alerts_sub, lines)
        await thermometers(kernel)
        await camera(kernel)
        alarm_sub.unsubscribe()  # the alarm drains what it was sent, then finishes
        await alarm_done.wait()
        alerts_sub.unsubscribe()

    print("loomk demo: a smart home on the event bus\n")
    for line in lines:
        print(line)
    dashboard.unsubscribe()
    newest = {topic: json.loads(event.payload)["celsius"] async for topic, event in dashboard}
    print("dashboard (latest per room):", ", ".join(f"{t} = {c} C" for t, c in newest.items()))
    display.unsubscribe()
    frames = [int.from_bytes(event.payload, "big") async for _, event in display]
    print(f"display showed frames {frames[0]}..{frames[-1]} ({len(frames)} of {FRAMES})")

    print("\nbus statistics")
    print(f"{'topic':<22} {'published':>9} {'delivered':>9} {'filtered':>8}  dropped")
    for topic in sorted(bus.topics()):
        stats = bus.stats(topic)
        print(
            f"{topic:<22} {stats.published:>9} {stats.delivered:>9} {stats.filtered:>8}  "
            f"{stats.dropped or '-'}"
        )
    totals = bus.totals()
    print(
        f"{'all topics':<22} {totals.published:>9} {totals.delivered:>9} {totals.filtered:>8}  "
        f"{totals.dropped}"
    )


if __name__ == "__main__":
    loomk.run(main)
