"""After registration: drift tests (`drift`), the score-and-monitor stage (`monitor`), alerts to
a webhook (`alerts`) and the Redis stream consumer (`stream`)."""
