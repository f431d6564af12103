"""The MuseTalk v1.5 inference engine: plain Python + torch, no Django.

The worker process keeps one ``Engine`` resident; everything here takes frozen config
dataclasses plus paths or arrays and returns dataclasses.
"""
