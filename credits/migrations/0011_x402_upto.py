"""x402 upto payments: the scheme of a payment and the amount an upto settlement moves (at most the permit)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('credits', '0010_x402_settlement_pending'),
    ]

    operations = [
        migrations.AddField(
            model_name='x402payment',
            name='scheme',
            field=models.CharField(default='exact', max_length=8),
        ),
        migrations.AddField(
            model_name='x402payment',
            name='settle_amount',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name='x402payment',
            constraint=models.CheckConstraint(condition=models.Q(('scheme__in', ['exact', 'upto']), models.Q(('settle_amount__isnull', True), models.Q(('settle_amount__gt', 0), ('settle_amount__lte', models.F('amount'))), _connector='OR')), name='credits_x402payment_upto_within_permit'),
        ),
    ]
