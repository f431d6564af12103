"""Forms of the account pages."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User

from musetalk_site.api_tokens import NAME_MAX


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional: for your own records.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX,
        help_text="What the key is for, e.g. “iOS app” or “staging server”.",
    )
