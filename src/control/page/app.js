// page coming
