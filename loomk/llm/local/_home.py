"""The home the local model talks about: its rooms and the devices that are not lights.

The hand-written rules, the Home Assistant sentence templates (as their ``area`` and
``name`` lists) and the speech grammar all read these, so a room named here is understood
and heard the same way everywhere.
"""

from __future__ import annotations

from loomk.llm.local._text import word_set

__all__ = ["HOME_INTENTS", "OTHER_DEVICES", "ROOMS"]

ROOMS: frozenset[str] = word_set(
    "kitchen bedroom bathroom toilet hallway hall corridor office study garage basement "
    "cellar attic garden porch patio balcony nursery den playroom lounge stairs landing "
    "pantry closet driveway yard backyard"
) | {
    "living room",
    "dining room",
    "family room",
    "guest room",
    "guest bedroom",
    "master bedroom",
    "kids room",
    "laundry room",
    "utility room",
    "front door",
    "back door",
    "front yard",
    "back yard",
}

# devices a command may switch that are not lights (name -> Home Assistant domain): a
# command naming one is recognised as such and left to a bigger model, not read as lights
OTHER_DEVICES: dict[str, str] = {
    "fan": "fan",
    "ceiling fan": "fan",
    "tv": "media_player",
    "television": "media_player",
    "radio": "media_player",
    "speaker": "media_player",
    "music": "media_player",
    "coffee maker": "switch",
    "kettle": "switch",
    "heater": "climate",
    "heating": "climate",
    "air conditioner": "climate",
    "air conditioning": "climate",
    "ac": "climate",
    "thermostat": "climate",
    "dishwasher": "switch",
    "washing machine": "switch",
    "oven": "switch",
    "computer": "switch",
    "printer": "switch",
}

# Home Assistant's intents the local model serves, and the local intent each one is
HOME_INTENTS = {
    "HassTurnOn": "lights",
    "HassTurnOff": "lights",
    "HassLightSet": "lights",
    "HassStartTimer": "timer",
    "HassGetCurrentTime": "time",
    "HassGetCurrentDate": "date",
    "HassGetWeather": "weather",
}
