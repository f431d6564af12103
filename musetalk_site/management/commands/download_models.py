from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Download the MuseTalk v1.5 weights into MODELS_DIR in the official layout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--models-dir", default=str(settings.MODELS_DIR))

    def handle(self, *args: Any, models_dir: str, **options: Any) -> None:
        from pathlib import Path

        from inference.download import download_models
        from inference.errors import InferenceError

        try:
            paths = download_models(Path(models_dir))
        except InferenceError as exc:
            raise CommandError(exc.message) from None
        for path in paths:
            self.stdout.write(f"  {path}")
        self.stdout.write(self.style.SUCCESS(f"MuseTalk weights are in {models_dir}."))
