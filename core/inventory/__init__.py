"""Device inventory: what each device reports it has (device facts, installed apps) and how its apps changed."""
