"""The privacy engine: the policy's promises, the data inventory, data-subject rights."""
