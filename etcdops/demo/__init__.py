"""The demo: a throwaway cluster, Kubernetes-shaped sample objects, and the whole job run on it."""
