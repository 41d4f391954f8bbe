"""The local data-services runner: the container's command line, run on this machine.

``registry`` maps ``(category, action)`` to an action module; ``cli`` parses
``<category> <action> -e <spec.yaml> [key=value ...]``. Action modules are imported lazily.
"""
