"""Runtime: graph store backends (embedded FalkorDB, Neo4j over Bolt), the twin service
(CRUD, etags, patches, queries, import), the event bus, the history store, topology views
(networkx), scheduling (OR-Tools), physics (FMU via fmpy) and USD export. Knows nothing
about GraphQL or Ray.
"""
