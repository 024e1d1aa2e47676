"""x402 settlements of unknown outcome: a status, the payload to ask again, serve on the next presentation."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('credits', '0009_model_price_versions'),
    ]

    operations = [
        migrations.AddField(
            model_name='x402payment',
            name='awaiting_presentation',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='x402payment',
            name='payload',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='x402payment',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('settlement_pending', 'Settlement Pending'), ('settled', 'Settled'), ('failed', 'Failed'), ('completed', 'Completed')], max_length=20),
        ),
        migrations.AddIndex(
            model_name='x402payment',
            index=models.Index(condition=models.Q(('status', 'settlement_pending'), ('awaiting_presentation', True), _connector='OR'), fields=['updated_at'], name='credits_x402_unresolved_idx'),
        ),
    ]
