PARAM name AS STRING LIKE "Ana" DESCRIPTION "Name of the visitor the booking is for"
PARAM date AS DATE LIKE "2026-05-14" DESCRIPTION "Day of the visit (YYYY-MM-DD)"
PARAM people AS INTEGER LIKE "2" DESCRIPTION "How many people are coming" OPTIONAL

DESCRIPTION "Book a guided visit to the garden for a visitor on a given day."

' A button runs the tool without arguments (the LLM passes them): ask for what is missing.
IF name = "" THEN
    TALK "Who is the visit for?"
    HEAR name AS NAME
END IF
IF date = "" THEN
    TALK "Which day would you like to come?"
    HEAR date AS DATE
END IF
IF people = "" THEN
    people = 1
END IF

SAVE "visits", name, date, people

TALK "Thank you, " + name + ". Your visit on " + date + " is booked for a group of " + people + "."
