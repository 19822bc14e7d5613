from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.utils.translation import gettext_lazy as _

from kulipa.accounts.models import User
from kulipa.accounts.throttle import ThrottledLoginForm


class SignupForm(UserCreationForm[User]):
    """E-mail, password and confirmation; Django's password validators apply (``AUTH_PASSWORD_VALIDATORS``)."""

    class Meta:
        model = User
        fields = ("email",)
        labels = {"email": _("E-mail")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].widget.attrs.update({"autocomplete": "email", "autofocus": True})
        self.fields["password1"].label = _("Palavra-passe")
        self.fields["password2"].label = _("Confirme a palavra-passe")

    def clean_email(self) -> str:
        email: str = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(_("Já existe uma conta com este e-mail. Entre com a sua palavra-passe."))
        return email


class EmailAuthenticationForm(ThrottledLoginForm):
    """Log in with e-mail (any letter case) and password; says so when too many failures locked it."""

    username = forms.EmailField(
        label=_("E-mail"), widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"})
    )
    password = forms.CharField(
        label=_("Palavra-passe"), strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": _("E-mail ou palavra-passe errados."),
    }

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"].strip().lower()
        return username


class StaffAuthenticationForm(ThrottledLoginForm, AdminAuthenticationForm):
    """The back office's login form (``admin.site.login_form``): Django's, saying so when locked."""
