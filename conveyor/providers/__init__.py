"""Provider contracts: what each action provider is, in one place (the registry), pure and sandbox-safe.

Validation, the `provider:` shorthand, the stage's dispatch, compensation, worker registration, the JSON
Schema and README's provider table all read `conveyor.providers.registry`. How to add one: docs/providers.md.
"""
