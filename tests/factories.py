from __future__ import annotations

import datetime as dt

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from avatars.models import Avatar, GenerationJob
from sessions_app.models import StreamRequest, StreamSession


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805 - factory_boy hook
        if create:
            obj.save()


class AvatarFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Avatar

    owner = factory.SubFactory(UserFactory)
    avatar_id = factory.Sequence(lambda n: f"avatar_{n}")
    status = Avatar.Status.READY
    progress = 100


class GenerationJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GenerationJob

    owner = factory.SubFactory(UserFactory)
    avatar = factory.SubFactory(AvatarFactory, owner=factory.SelfAttribute("..owner"))
    request_id = factory.Sequence(lambda n: f"req_{n:08x}")


class StreamSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StreamSession

    owner = factory.SubFactory(UserFactory)
    avatar = factory.SubFactory(AvatarFactory, owner=factory.SelfAttribute("..owner"))
    user_id = "app-user-1"
    expires_at = factory.LazyFunction(lambda: timezone.now() + dt.timedelta(hours=1))


class StreamRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StreamRequest

    session = factory.SubFactory(StreamSessionFactory)
    request_id = factory.Sequence(lambda n: f"stream_req_{n:08x}")
