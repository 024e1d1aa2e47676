"""Versioned model prices (append-only: a new price is a new row, never an edit)."""

from django.db import migrations, models

APPEND_ONLY = """
CREATE TRIGGER credits_modelpriceversion_append_only
  BEFORE UPDATE OR DELETE ON credits_modelpriceversion
  FOR EACH ROW EXECUTE FUNCTION finn_reject_mutation();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('credits', '0008_apikey_rate_limit'),
        ('finn', '0002_audit_append_only'),
    ]

    operations = [
        migrations.CreateModel(
            name='ModelPriceVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model', models.CharField(max_length=100)),
                ('input_per_million', models.BigIntegerField()),
                ('output_per_million', models.BigIntegerField()),
                ('effective_from', models.DateTimeField()),
                ('created_at', models.DateTimeField()),
                ('created_by', models.CharField(max_length=150)),
                ('reason', models.TextField(blank=True, default='')),
            ],
            options={
                'verbose_name': 'model price',
                'constraints': [models.CheckConstraint(condition=models.Q(('input_per_million__gte', 0), ('output_per_million__gte', 0)), name='credits_modelpriceversion_prices_non_negative'), models.CheckConstraint(condition=models.Q(('model', ''), _negated=True), name='credits_modelpriceversion_model_named'), models.UniqueConstraint(fields=('model', 'effective_from'), name='credits_modelpriceversion_model_from_uniq')],
            },
        ),
        migrations.RunSQL(APPEND_ONLY, "DROP TRIGGER IF EXISTS credits_modelpriceversion_append_only ON credits_modelpriceversion;"),
    ]
