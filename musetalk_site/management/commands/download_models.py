from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Download the MuseTalk v1.5 weights into MODELS_DIR in the official layout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--models-dir", default=str(settings.MODELS_DIR))
        parser.add_argument(
            "--with-face-models",
            action="store_true",
            help="also fetch the official face models (DWPose ONNX, BiSeNet)",
        )

    def handle(self, *args: Any, models_dir: str, with_face_models: bool, **options: Any) -> None:
        from pathlib import Path

        from inference.download import download_models
        from inference.errors import InferenceError

        try:
            paths = download_models(Path(models_dir), include_optional=with_face_models)
        except InferenceError as exc:
            raise CommandError(exc.message) from None
        for path in paths:
            self.stdout.write(f"  {path}")
        self.stdout.write(self.style.SUCCESS(f"MuseTalk weights are in {models_dir}."))
