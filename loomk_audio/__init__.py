"""Audio edge of loomk: sources, VAD, wake word, STT, TTS and the voice pipeline.

Its modules arrive with the audio issue; the package exists now so the distribution's
layout (``loomk``, ``loomk_bridge``, ``loomk_audio``) is fixed from the start.
"""
