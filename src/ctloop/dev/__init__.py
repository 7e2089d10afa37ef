"""Developer tools, not part of the library: the local stack, the demo, the DAG runner and
the server launcher. Library modules never import from here."""
