from django.apps import AppConfig


class MusetalkSiteConfig(AppConfig):
    name = "musetalk_site"
    verbose_name = "Platform"
