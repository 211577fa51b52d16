"""The HTTP app: assembled in `app`, API keys, and the guards every request passes (body size, rate
limits, security headers, documented refusals). Each domain's routes are in the domain."""
