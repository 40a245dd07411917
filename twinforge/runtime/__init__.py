"""Runtime: graph store backends (embedded FalkorDB, Neo4j over Bolt), the twin service
(CRUD, etags, patches, queries, import), the event bus, the history store, topology views
(networkx) and the command service (safety policy, approvals, audit). Knows nothing about
GraphQL, Ray or protocols.
"""
