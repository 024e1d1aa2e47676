from django.apps import AppConfig


class NftConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "nft"
    verbose_name = "NFT agents"
