"""FoodSeg103 data: readers for both layouts, validation, statistics and training inputs."""
