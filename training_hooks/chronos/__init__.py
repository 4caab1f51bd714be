"""Chronos family: Hugging Face Chronos forecasters (T5, Bolt, Chronos-2) logged as model
folders (configs plus safetensors) and served by ``bentos/chronos``. ``runtime`` and
``validation`` are what serving and the gate need; ``sources``, ``log``, ``builders`` and
``demo`` are training side.
"""
