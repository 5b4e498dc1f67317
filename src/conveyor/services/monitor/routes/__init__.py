"""The monitor's routes, one router per concern: pages and health, reading, acting."""
