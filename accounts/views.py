from django.http import HttpRequest, HttpResponse


def oauth_callback(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


def account_list(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


def connect(request: HttpRequest, provider_id: str) -> HttpResponse:
    raise NotImplementedError


def disconnect(request: HttpRequest, account_id: int) -> HttpResponse:
    raise NotImplementedError
