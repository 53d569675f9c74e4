"""Style engines: Gatys optimisation over VGG19 features, sharing one progress contract.

Engines take images, a frozen parameter object, a device, and optional progress/preview
callbacks and a cancel flag (`gpu_node.engine.progress`). They know nothing of asyncio or
the wire protocol.
"""
