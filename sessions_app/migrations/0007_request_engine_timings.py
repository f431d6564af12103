from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0006_request_generated_seconds"),
    ]

    operations = [
        migrations.AddField(
            model_name="streamrequest",
            name="engine_timings",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
