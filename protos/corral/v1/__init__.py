"""Generated wire types of the corral v1 contract (see the .proto files beside this module)."""
