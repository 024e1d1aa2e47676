from django.apps import AppConfig


class NftConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "nft"
    verbose_name = "NFT agents"

    def ready(self) -> None:
        from nft import detection  # noqa: F401  (registers the nft_detection breaker)
