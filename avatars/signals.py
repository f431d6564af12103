"""What the avatars app tells the apps built on it, without knowing them.

Receivers connect in their ``AppConfig.ready()``. Both signals are sent after the database
change has committed, in the process that made it.

- ``avatar_prepared(sender=Avatar, avatar=...)``: a preparation installed new assets (sent in
  the worker that prepared them). Apps that derive files from the assets make them here.
- ``avatar_deleted(sender=Avatar, avatar=...)``: the avatar and its own files are gone. Apps
  remove what they derived from it; ``avatar.storage_key`` still names its folders.
"""

from __future__ import annotations

from django.dispatch import Signal

avatar_prepared = Signal()
avatar_deleted = Signal()
