from django.http import HttpRequest, HttpResponse


def mail_settings(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError
