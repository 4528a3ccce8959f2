"""Agents at home: sensors feed a supervised alarm, which asks a notifier to warn people.

Run it with ``make demo`` (or ``python examples/smart_home.py``). Offline and deterministic.
With ``--dashboard HOST:PORT`` (``make demo DASHBOARD=1``) it also serves the web dashboard
there, prints its address, and keeps the home running ``--linger`` seconds after the demo so
the page has live traffic to show (Ctrl+C ends it).
It shows the agent API (class and function form), private reply topics, ``ctx.emit`` and
``ctx.reply``, persistent ``ctx.state`` committed with the events a handler emits, a crashing
agent that its supervisor restarts without losing queued events, the agent directory, and the
statistics of the bus and of each agent. Then an assistant answers questions by
request/reply: the router sends each to the built-in local model (no network needed
unless ``LOOMK_LLM_BASE_URL`` or ``VLLM_BASE_URL`` names a model server), and the answer
for the lights comes with the action to take.
"""

from __future__ import annotations

import argparse
import json
import random
from functools import partial

import trio
import trio.testing

import loomk
from loomk import Agent, Context, Event, Kernel, Topic

READINGS = [  # (room, degrees Celsius)
    ("kitchen", 21.5),
    ("attic", 31.0),
    ("garage", 13.0),
    ("attic", 36.5),
    ("kitchen", 99.9),  # a broken sensor: the alarm agent crashes on it, and is restarted
    ("attic", 38.0),
]


class Alarm(Agent):
    """Watches every temperature and asks the notifier to warn above a threshold."""

    topics = ("sensors.*.temp",)
    capabilities = ("alarm.heat",)

    def __init__(self, agent_id: str, threshold: float) -> None:
        super().__init__(agent_id)
        self.threshold = threshold

    async def on_start(self, ctx: Context) -> None:
        ctx.log.info("alarm armed", threshold=self.threshold)

    async def on_event(self, ctx: Context, event: Event) -> None:
        if event.type != "temp":
            return  # acknowledgements on our private topic: the recorder keeps those
        reading = json.loads(event.payload)
        if reading["celsius"] > 90:
            raise ValueError(f"implausible reading {reading}")  # the supervisor restarts us
        if reading["celsius"] >= self.threshold:
            # Both the count and the warning take effect when this handler returns, together:
            # after a crash neither or both are there (the warning is held until the commit).
            ctx.state["warnings"] = ctx.state.get("warnings", 0) + 1
            warning = Event("warn", event.payload, metadata={"reply_to": ctx.reply_topic})
            await ctx.emit("agent.notifier.replies", warning)


@loomk.agent("notifier", capabilities=["notify.push"])
async def notifier(ctx: Context, event: Event) -> None:
    """Pushes warnings (it listens on its private topic) and confirms each one."""
    if event.type == "warn":
        reading = json.loads(event.payload)
        message = f"too hot in the {reading['room']}: {reading['celsius']} C"
        await ctx.kernel.bus.publish("ui.push", Event("push", message.encode()))
        await ctx.reply(event, Event("ack", message.encode()))


class Recorder(Agent):
    """Keeps what the alarm hears back, so the demo can print it."""

    topics = (Topic("agent.alarm.replies", event_types=["ack"]),)

    def __init__(self, agent_id: str, acks: list[str]) -> None:
        super().__init__(agent_id)
        self.acks = acks

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.acks.append(event.payload.decode())


QUESTIONS = [
    "Hey loom, turn on the kitchen lights please",
    "what is 21.5 plus 13",
    "set a timer for 5 minutes",
    "tell me a story",
]


class Assistant(Agent):
    """Answers questions with the model the router picks (offline: the local model)."""

    topics = ("home.ask",)
    routed = True  # the runtime routes each event first (routing_decision on agent.assistant)

    async def on_event(self, ctx: Context, event: Event) -> None:
        answer = await ctx.answer(event)
        actions = json.dumps(answer.output.get("actions", []))
        reply = Event("answer", answer.text.encode(), metadata={"actions": actions})
        await ctx.reply(event, reply.with_metadata(route=answer.route.value))


async def ask_the_assistant(kernel: Kernel) -> None:
    await kernel.spawn(Assistant("assistant"))
    asker = kernel.collaborator("demo")
    print("\nassistant (request/reply; the router picks the model)")
    for question in QUESTIONS:
        reply = await asker.request("home.ask", Event("user.query", question.encode()), timeout_s=5)
        print(f"  {question!r}")
        print(f"    -> [{reply.metadata['route']}] {reply.payload.decode()}")
        for action in json.loads(reply.metadata["actions"]):
            print(f"       action: {action['capability']} {json.dumps(action['args'])}")
    print("  capabilities:", ", ".join(d.key for d in kernel.capabilities.list()))


async def main(kernel: Kernel, linger_s: float = 0.0) -> None:
    dashboard = kernel.edges.get("dashboard")  # a loomk.dashboard.Dashboard when asked for
    if dashboard is not None:
        url = dashboard.url  # type: ignore[attr-defined]
        print(f"dashboard: {url}  (Prometheus metrics: {url}metrics)\n")
    pushes = kernel.bus.subscribe("ui.push")
    system = kernel.bus.subscribe("system.agent.>")
    acks: list[str] = []
    alarm = await kernel.spawn(Alarm("alarm", threshold=35.0), backoff_s=0.01, jitter=0.0)
    await kernel.spawn(notifier)
    await kernel.spawn(Recorder("recorder", acks))

    for room, celsius in READINGS:
        reading = json.dumps({"room": room, "celsius": celsius}).encode()
        await kernel.bus.publish(f"sensors.{room}.temp", Event("temp", reading))
    topic, restarted = await system.receive()  # the alarm crashed on 99.9 C and came back
    for _ in range(2):
        await pushes.receive()
    await trio.testing.wait_all_tasks_blocked()

    print("loomk demo: agents at home\n")
    print("pushed to the UI:")
    for message in acks:
        print(f"  {message}")
    print(f"supervisor: {topic} {json.loads(restarted.payload)['error']}")
    print("alarm state:", json.loads(kernel.agent_state("alarm").persistent_state))
    print("directory: alarm.heat ->", kernel.directory.by_capability("alarm.heat"))
    print("directory: sensors.attic.temp ->", kernel.directory.by_topic("sensors.attic.temp"))

    print("\nagents")
    print(f"{'agent':<10} {'status':<8} {'handled':>7} {'failures':>8} {'restarts':>8}")
    for agent_id in kernel.agents.list():
        stats = kernel.agents.get(agent_id).stats()
        print(
            f"{agent_id:<10} {stats.status:<8} {stats.handled:>7} {stats.failures:>8} "
            f"{stats.restarts:>8}"
        )
    assert alarm.restarts == 1

    print("\nbus")
    print(f"{'topic':<24} {'published':>9} {'delivered':>9} {'filtered':>8}")
    for name in sorted(kernel.bus.topics()):
        stats = kernel.bus.stats(name)
        print(f"{name:<24} {stats.published:>9} {stats.delivered:>9} {stats.filtered:>8}")

    await ask_the_assistant(kernel)
    if dashboard is not None and linger_s > 0:
        print(f"\nthe home keeps running for {linger_s:g} s for the dashboard (Ctrl+C stops it)")
        with trio.move_on_after(linger_s):
            await keep_the_home_running(kernel)


async def keep_the_home_running(kernel: Kernel) -> None:
    """Live traffic for the dashboard: a reading every half second, a question now and then."""
    asker = kernel.collaborator("demo")
    tick = 0
    while True:
        room = random.choice(["kitchen", "attic", "garage"])
        reading = json.dumps({"room": room, "celsius": round(random.uniform(15, 40), 1)})
        await kernel.bus.publish(f"sensors.{room}.temp", Event("temp", reading.encode()))
        tick += 1
        if tick % 6 == 0:
            question = random.choice(QUESTIONS)
            await asker.request("home.ask", Event("user.query", question.encode()), timeout_s=5)
        await trio.sleep(0.5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dashboard",
        metavar="HOST:PORT",
        default="",
        help="serve the web dashboard there while the demo runs (needs loomk[dashboard])",
    )
    parser.add_argument(
        "--linger",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help="with --dashboard: how long the home keeps running after the demo (default 30)",
    )
    args = parser.parse_args()
    # state_temporary: the demo keeps its state in a throw-away directory; drop it to keep
    # the alarm's count in .loomk/ in the working directory across runs.
    loomk.run(
        partial(main, linger_s=args.linger),
        log_level="critical",
        state_temporary=True,
        dashboard_address=args.dashboard,
    )
