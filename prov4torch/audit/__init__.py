"""Reading finished PROV-JSON files (ours or anyone's): the graph reader, merge, validate,
lineage queries, Graphviz rendering and summaries."""
